from __future__ import annotations

import os
import sys
from pathlib import Path

if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:  # pragma: no cover
        pass

sys.path.insert(0, str(Path(__file__).resolve().parent))
