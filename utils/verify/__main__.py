"""``python -m utils.verify``: train a checkpoint's verifier (``utils.verify.train.main``)."""
import sys

from utils.verify.train import main

sys.exit(main())
