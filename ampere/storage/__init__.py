"""Where the pipeline's shared state lives: a local folder or an object store, named by URL."""

from ampere.storage.location import ConditionFailed, Location, is_remote, local_copy, mirror_root
from ampere.storage.pointer import Pointer

__all__ = ["ConditionFailed", "Location", "Pointer", "is_remote", "local_copy", "mirror_root"]
