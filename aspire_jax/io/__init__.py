"""Checkpoint files: framed msgpack state, HDF5 layout, config and history.

``aspire_jax.io.checkpoint`` turns a state pytree into bytes and back against
a template; ``aspire_jax.io.hdf5`` stores those bytes, JSON configuration and
per-step history in an HDF5 file written atomically.
"""

from aspire_jax.io.checkpoint import (
    FORMAT_VERSION,
    check_state_bytes,
    state_dict_from_bytes,
    state_from_bytes,
    state_from_state_dict,
    state_to_bytes,
)
from aspire_jax.io.hdf5 import (
    AspireFile,
    check_file_version,
    history_from_group,
    history_to_group,
    is_aspire_file,
    read_checkpoint_bytes,
    read_json_group,
    write_checkpoint_file,
    write_json_group,
)

__all__ = [
    "FORMAT_VERSION",
    "AspireFile",
    "check_state_bytes",
    "state_to_bytes",
    "state_from_bytes",
    "state_dict_from_bytes",
    "state_from_state_dict",
    "write_json_group",
    "read_json_group",
    "write_checkpoint_file",
    "read_checkpoint_bytes",
    "is_aspire_file",
    "check_file_version",
    "history_to_group",
    "history_from_group",
]
