from collections.abc import Sequence

LANES: int

def md5_many(buffers: Sequence[bytes | bytearray | memoryview], lanes: int = ..., /) -> list[bytes]: ...
