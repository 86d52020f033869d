"""`kserve.utils.numpy_codec`: V2 datatype names to NumPy dtypes and back. Unlike gpuserve's own
`datatypes` module these answer None for a type they cannot name, as KServe code expects to test for."""

from __future__ import annotations

from typing import Optional

import numpy as np

from gpuserve.datatypes import DATATYPES, to_numpy_dtype


def to_np_dtype(datatype: str):
    """The NumPy type for a V2 datatype; None for BF16 (NumPy has none) and unknown names."""
    if datatype not in DATATYPES or datatype == "BF16":
        return None
    return bool if datatype == "BOOL" else to_numpy_dtype(datatype).type


def from_np_dtype(np_dtype) -> Optional[str]:
    """The V2 datatype of a NumPy dtype; object, bytes and datetime64 arrays are BYTES, strings too."""
    dtype = np.dtype(np_dtype)
    if dtype.kind in "OSUM":
        return "BYTES"
    for name in DATATYPES:
        if name not in ("BYTES", "BF16") and to_numpy_dtype(name) == dtype:
            return name
    return None


__all__ = ["to_np_dtype", "from_np_dtype"]
