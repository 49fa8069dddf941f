"""pytest settings for every test path, the tutorials included.

The tutorials read Set5, Set14 and the BSDS500 photos from the folder named by the environment
variable `FLOWLEARN_DATA`. Under pytest it defaults to the data sets beside the repository (the
kernels that nbval starts inherit this process's environment); without them the tutorials fall
back to photos that ship with flowlearn or scikit-image.
"""

import os
from pathlib import Path

DATASETS = Path(__file__).resolve().parent.parent / "shared" / "datasets"

if "FLOWLEARN_DATA" not in os.environ and DATASETS.is_dir():
    os.environ["FLOWLEARN_DATA"] = str(DATASETS)
