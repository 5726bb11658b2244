"""An entry script returning a pandas DataFrame, one row per item (Azure ML's append_row style)."""

import os

import pandas as pd


def init():
    pass


def run(mini_batch):
    return pd.DataFrame(
        {"name": [os.path.basename(p) for p in mini_batch], "size": [os.path.getsize(p) for p in mini_batch]}
    )
