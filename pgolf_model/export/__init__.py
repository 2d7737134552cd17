"""From trained weights to the artifact's weights part, within the byte budget (host only).

In the order an export runs them: ``calibration`` (sequences the model generates itself, and their Hessians),
``allocation`` (bit widths per tensor group that fit the budget), ``ptq`` (per-group rules: round to nearest or GPTQ,
then LQER), ``gptq`` (the GPTQ loop for one matrix), ``lqer`` (low-rank error factors), ``weights`` (the export step
that runs them and compresses), and ``estimate`` (the artifact's size for a config before any training).
"""
