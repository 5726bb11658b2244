"""The cheapest entry script: init() does nothing, run() returns the file names."""

import os


def init():
    pass


def run(mini_batch):
    return [os.path.basename(path) for path in mini_batch]
