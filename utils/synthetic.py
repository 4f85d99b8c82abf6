"""``python -m utils.synthetic``: write a generated dataset (the command of ``utils.data.synthetic``)."""
import sys

from utils.data.synthetic import main

if __name__ == "__main__":
    sys.exit(main())
