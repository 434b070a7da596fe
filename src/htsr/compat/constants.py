"""The reference tool's public constants, so scripts written for it run unchanged.

``import htsr.compat as ww`` then ``ww.LAYER_TYPE.CONV2D``, ``ww.METRICS.ALPHA``,
``fit=ww.TPL`` or ``fix_fingers=ww.XMIN_PEAK`` give the same values as in
weightwatcher 0.7.7 (mostly the option names and option values its
``analyze()`` takes, as strings). htsr's own code uses its enums
(:class:`htsr.config.LayerType`, :class:`htsr.config.Device`); the string
values here are equal to those enums' values where both exist, so
``layers=[ww.LAYER_TYPE.CONV2D]`` selects htsr's conv2d layers.

Examples
--------
>>> import htsr.compat as ww
>>> ww.LAYER_TYPE.CONV2D, ww.METRICS.ALPHA, ww.DEFAULT_MIN_EVALS
('conv2d', 'alpha', 8)
"""

from __future__ import annotations

from enum import IntFlag, auto

from ..spectral.powerlaw import OVER_TRAINED as _OVER_TRAINED_ALPHA
from ..spectral.powerlaw import UNDER_TRAINED as _UNDER_TRAINED_ALPHA

# --- general -----------------------------------------------------------------------------------
WW_NAME = "weightwatcher"
ERROR = -1
DEF_SAVE_DIR = "ww-img"
WW_CONFIG_FILENAME = "ww_config.json"
UNKNOWN = "unknown"

# --- option names (keys of the reference's params dict) ----------------------------------------
LAYERS = "layers"
START_IDS = "layer_ids_start"
SVD_METHOD = "svd_method"
FIT = "fit"
PL_PACKAGE = "pl_package"
XMAX = "xmax"
FIX_FINGERS = "fix_fingers"
XMIN_MAX = "xmin_max"
MAX_FINGERS = "MAX_FINGERS"
FINGER_THRESH = "finger_thresh"
GLOROT_FIX = "glorot_fix"
GLOROT_FIT = "glorot_fit"
NORMALIZE = "normalize"
SAVEFIG = "savefig"
SAVEDIR = "savedir"
DELTA_ES = "deltaEs"
INTRA = "intra"
FFT = "fft"
CONV2D_NORM = "conv2d_norm"
CONV2D_FFT = "conv2d_fft"
WW2X = "ww2x"
POOL = "pool"
PEFT = "peft"
VECTORS = "vectors"
SMOOTH = "smooth"
MP_FIT = "mp_fit"
RESCALE = "rescale"
RANDOMIZE = "randomize"
SPARSIFY = "sparsify"
DETX = "detX"
LAMBDA_MIN = "alpha_min"
MIN_EVALS = "min_evals"
MAX_EVALS = "max_evals"
MAX_N = "max_N"
PLOT = "plot"
STACKED = "stacked"
CHANNELS_STR = "channels"
TOLERANCE = "tolerance"
ADD_BIASES = "add_biases"
INVERSE = "inverse"
SOURCE = "source"

# --- option values -----------------------------------------------------------------------------
ACCURATE = ACCURATE_SVD = "accurate"
FAST = FAST_SVD = "fast"
TRUNCATED = TRUNCATED_SVD = "truncated"
VALID_SVD_METHODS = [FAST_SVD, ACCURATE_SVD]
XMIN_PEAK = "xmin_peak"
CLIP_XMAX = "clip_xmax"
SVD = "svd"
RMT = "rmt"
PL = "PL"
POWER_LAW = "power_law"
POWERLAW = "powerlaw"
TPL = "TPL"
TRUNCATED_POWER_LAW = "truncated_power_law"
E_TPL = "E_TPL"
LOG_NORMAL = "lognormal"
EXPONENTIAL = "exponential"
POWERLAW_PACKAGE = "powerlaw"
WW_POWERLAW_PACKAGE = WW_POWERLAW = "ww"
DEFAULT_POWERLAW_PACKAGE = WW_POWERLAW_PACKAGE
XMAX_FORCE = FORCE = "force"
DEFAULT_XMAX = None
EUCLIDEAN = "euclidean"
CKA = "cka"
RAW = "raw"
AUTO = "auto"
FIRST = "first"
LAST = "last"
PYTORCH = "pytorch"
TENSORFLOW = "tensorflow"
KERAS = "keras"
KERAS_H5_FILE = "keras_h5_file"
PYSTATEDICT = "pystatedict"
ONNX = "onnx"
WW_FLATFILES = "ww_flatfiles"
SAFETENSORS = "safetensors"
PEFT_WITH_BASE = "with_base"

# --- statuses and warnings ---------------------------------------------------------------------
SUCCESS = "success"
FAILED = "failed"
OVER_TRAINED = "over-trained"
UNDER_TRAINED = "under-trained"
OVER_TRAINED_THRESH = _OVER_TRAINED_ALPHA
UNDER_TRAINED_THRESH = _UNDER_TRAINED_ALPHA

# --- defaults ----------------------------------------------------------------------------------
DEFAULT_MAX_FINGERS = 10
DEFAULT_FINGER_THRESH = 1.0
DEFAULT_WW2X = False
DEFAULT_POOL = True
DEFAULT_MIN_EVALS = MIN_NUM_EVALS = 8
DEFAULT_MAX_EVALS = MAX_NUM_EVALS = 15000
DEFAULT_MAX_N = 50000
WEAK_RANK_LOSS_TOLERANCE = 0.000001
DEFAULT_PEFT = False
DEFAULT_START_ID = 0
EVALS_THRESH = 1e-5
EPSILON = 1e-10
EVALS_HALF_THRESH = 1e-4
HALF_EPSILON = 6e-05

# The reference's own default params dict (it documents that analyze()'s keyword defaults differ).
DEFAULT_PARAMS = {
    GLOROT_FIX: False, NORMALIZE: False, CONV2D_NORM: True, RANDOMIZE: True, SAVEDIR: DEF_SAVE_DIR,
    SAVEFIG: True, RESCALE: True, PLOT: False, DELTA_ES: False, INTRA: False, CHANNELS_STR: None, FFT: False,
    CONV2D_FFT: False, WW2X: DEFAULT_WW2X, POOL: DEFAULT_POOL, VECTORS: True, SMOOTH: None, STACKED: False,
    SVD_METHOD: FAST_SVD, FIX_FINGERS: None, FIT: POWER_LAW, MAX_FINGERS: DEFAULT_MAX_FINGERS,
    FINGER_THRESH: DEFAULT_FINGER_THRESH, SPARSIFY: True, DETX: True, MP_FIT: False,
    MIN_EVALS: DEFAULT_MIN_EVALS, MAX_EVALS: DEFAULT_MAX_EVALS, MAX_N: DEFAULT_MAX_N,
    TOLERANCE: WEAK_RANK_LOSS_TOLERANCE, START_IDS: DEFAULT_START_ID, ADD_BIASES: False, XMIN_MAX: None,
    PL_PACKAGE: DEFAULT_POWERLAW_PACKAGE, XMAX: DEFAULT_XMAX, PEFT: DEFAULT_PEFT, INVERSE: False,
}

# --- layer types (equal to htsr.config.LayerType values where both exist) ----------------------
NORM = "norm"
DENSE = "dense"
CONV2D = "conv2d"
CONV1D = "conv1d"
MBEDDING = "embedding"  # sic: the reference's spelling of this name
BIDIRECTIONAL = "bidirectional"


class LAYER_TYPE:
    """Layer kinds, as strings usable in ``layers=[...]``."""

    UNKNOWN = UNKNOWN
    STACKED = "stacked"
    DENSE = DENSE
    CONV1D = CONV1D
    CONV2D = CONV2D
    FLATTENED = "flattened"
    EMBEDDING = "embedding"
    BIDIRECTIONAL = BIDIRECTIONAL
    NORM = NORM


LAYER_TYPES_SUPPORTED = [LAYER_TYPE.CONV2D, LAYER_TYPE.CONV1D, LAYER_TYPE.DENSE, LAYER_TYPE.EMBEDDING, LAYER_TYPE.NORM]


class FRAMEWORK:
    """Framework names (htsr recognizes the model itself; ``framework=`` is accepted and ignored)."""

    UNKNOWN = UNKNOWN
    PYTORCH = PYTORCH
    KERAS = KERAS
    ONNX = ONNX
    PYSTATEDICT = PYSTATEDICT
    PYSTATEDICT_DIR = "pystatedict_dir"
    WW_FLATFILES = WW_FLATFILES
    KERAS_H5_FILE = KERAS_H5_FILE


class CHANNELS:
    """Position of the channel axes of a conv kernel."""

    UNKNOWN = UNKNOWN
    FIRST = FIRST
    LAST = LAST


class METHODS(IntFlag):
    """What a layer iteration is for."""

    DESCRIBE = auto()
    ANALYZE = auto()


class MODEL_FILE_FORMATS:
    """Formats the reference can extract a model into."""

    PYTORCH = PYTORCH
    SAFETENSORS = SAFETENSORS
    WW_FLATFILES = WW_FLATFILES
    KERAS_H5_FILE = KERAS_H5_FILE


class METRICS:
    """Names of the summary metric columns."""

    NORM = "norm"
    LOG_NORM = "log_norm"
    ALPHA = "alpha"
    ALPHA_WEIGHTED = "alpha_weighted"
    LOG_ALPHA_NORM = "log_alpha_norm"
    SPECTRAL_NORM = "spectral_norm"
    LOG_SPECTRAL_NORM = "log_spectral_norm"
    STABLE_RANK = "stable_rank"
    MP_SOFTRANK = "mp_softrank"
    MATRIX_RANK = "matrix_rank"
    MATRIX_ENTROPY = "entropy"


class XMIN(IntFlag):
    """How xmin is chosen."""

    UNKNOWN = auto()
    AUTO = auto()


__all__ = sorted(name for name in dir() if name.isupper() and not name.startswith("_"))
