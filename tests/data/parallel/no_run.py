"""An entry script without run(): the driver must refuse it."""


def init():
    pass
