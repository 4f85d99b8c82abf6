"""Scoring saved outputs, with no network: pixel metrics (``metrics``), box-level counts and their one rule
(``boxes``), scoring a run against masks (``scoring``) or box labels (``boxscore``), false-alarm reviews
(``reviews``), the selection score (``selection``) and the charts (``chart``)."""
