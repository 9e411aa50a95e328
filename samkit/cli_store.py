"""Front-end shim: the code moved to :mod:`samkit.cli.store`; this module re-exports it."""
from samkit.cli.store import (  # noqa: F401
    IMAGE_EXTENSIONS,
    COCOParts,
    SA1BFolder,
    file_sha256,
    image_files,
    stable_image_id,
)

__all__ = ["COCOParts", "IMAGE_EXTENSIONS", "SA1BFolder", "file_sha256", "image_files", "stable_image_id"]
