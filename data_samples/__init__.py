"""Small real data shipped with align_lite (installed as ``align_lite.data_samples``).

Data only; see ``README.md`` here. Load the emoji sample with
:func:`align_lite.data.emoji.load_emoji`.
"""
