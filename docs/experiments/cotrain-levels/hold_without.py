"""hold.py (../cotrain-hold) with some of the branch's residual outputs cut off for the whole run: a forward hook
multiplies those projections' outputs by 0, so the pair learns without them (and their weights get no gradient).
usage: CUT=3 python hold_without.py WORK STEPS HOLD SEED [SOURCE [SHAPE_WEIGHT [SHAPE_MARGIN]]]
(CUT: comma-separated indices of StyleBranch.down_projections; "mid" for the mid projection)
After the run, zero_cut.py sets those projections' weights to 0 in WORK/branch-init.safetensors before export."""
import runpy, sys
from pathlib import Path

import cut  # noqa: F401  (wraps loaders.new_branch: hold.py wraps it in turn)
sys.argv = [str(Path(__file__).with_name("hold.py"))] + sys.argv[1:]
runpy.run_path(str(Path(__file__).parent.parent / "cotrain-hold" / "hold.py"), run_name="__main__")
