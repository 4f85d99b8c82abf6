"""The second stage: a small network that re-scores LRRNet's candidate targets and drops the clutter.

- ``utils.verify.apply``: applying a trained verifier (``Verification``, ``load_verification``); what
  ``inference.py`` uses.
- ``utils.verify.train``: training it and choosing its acceptance level on val, the command
  ``python -m utils.verify --checkpoint CKPT --out CKPT`` (docs/verifier.md).
"""
