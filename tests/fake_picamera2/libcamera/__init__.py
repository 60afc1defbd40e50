"""Stand-in for libcamera's Python bindings: only ``Transform`` (see ../README.md)."""


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        self.hflip, self.vflip, self.transpose = int(hflip), int(vflip), int(transpose)

    def __repr__(self) -> str:
        return f"<libcamera.Transform hflip={self.hflip} vflip={self.vflip} transpose={self.transpose}>"
