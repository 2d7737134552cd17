"""Submissions: a records folder from pgolf runs, and the pre-submission check of any records folder.

``logs`` (the official log line format, read and written), ``runs`` (a run directory as a submission sees it),
``folder`` (``submission.json``, ``README.md``, logs, ``requirements.txt``), ``stub`` (the self-contained
``train_gpt.py``) and ``script`` (what it runs), ``check`` (the validator) and ``legality`` (issue #1017's C1-C4,
measured on an artifact). ``python -m pgolf_model.submit`` is the command line.
"""
