"""Validated, frozen analysis options.

Options arrive as keyword arguments (from :func:`htsr.analyze`, the compat class
or the command line) and are checked once, here: a bad value fails at once with
a message that names the option, e.g. ``The 'min_evals' option must be a
positive integer; got -3.``
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import OptionError, UnknownOptionError


class Device(str, enum.Enum):
    """Where eigenvalues are computed."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class LayerType(str, enum.Enum):
    """Kinds of layer htsr analyzes (the reference's names)."""

    DENSE = "dense"
    EMBEDDING = "embedding"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    NORM = "norm"
    OTHER = "other"


@dataclass(frozen=True)
class LayerSelection:
    """Which layers to analyze: ids, names, longnames or types.

    ``include`` empty means every layer; ``exclude`` is applied afterwards.
    """

    include: tuple[int | str, ...] = ()
    exclude: tuple[int | str, ...] = ()

    def selects(self, layer_id: int, name: str, longname: str, layer_type: str) -> bool:
        def hit(sel: int | str) -> bool:
            if isinstance(sel, int):
                return sel == layer_id
            return sel in (name, longname, layer_type)

        if self.include and not any(hit(s) for s in self.include):
            return False
        return not any(hit(s) for s in self.exclude)


@dataclass(frozen=True)
class AnalysisConfig:
    """Every option of one analysis run, validated.

    Parameters
    ----------
    min_evals, max_evals, max_N
        Layer gates: a layer is skipped when it has fewer than ``min_evals`` or
        more than ``max_evals`` eigenvalues (M·rf), or when its larger dimension
        N exceeds ``max_N`` (the reference's vocabulary-embedding skip; ``max_N=None``
        lifts it: large matrices are analyzed in bounded memory, see :mod:`htsr.blocked`).
    pool
        Conv layers: pool the kernel-position slices into one ESD (default) or
        give one row per slice.
    conv2d_norm
        Multiply conv2d slices by sqrt(1/2), as the reference does.
    randomize
        Also compute the ESD of each matrix with its elements shuffled.
    mp_fit
        Fit the Marchenko–Pastur law to the bulk.
    detX
        Compute the reference's detX columns.
    seed
        Seed of the random generator used by ``randomize``.
    layers
        Which layers to analyze.
    device
        ``auto`` uses a CUDA GPU through torch when one is visible.
    workers
        Layers analyzed at once on the CPU, one thread each with single-threaded
        BLAS (0: one per core). Results are identical for any value; at most
        ``workers + 1`` tensors are held at once.
    fast
        Opt-in approximate CPU path: float32 Gram matrix and eigensolver (about
        2× on large layers; alpha moves by ~1e-7 relative, ``sv_min`` and the
        rank columns are unreliable). Never the default; the GPU route is
        always float64.
    progress
        Show a progress bar on stderr (None: only when stderr is a terminal).
    keep_esd
        Also keep the power-law fit's whole search (alpha and D at every candidate
        xmin) for the ``esd4``/``esd5`` figures; set by ``plot``/``savefig``. The
        eigenvalues themselves are always kept on the report's ``layers``.
    tolerance
        Eigenvalues below this count as ``weak_rank_loss`` (reference: 1e-6).
    start_ids
        Added to module layer ids (the reference's ``start_ids``; key-value sources always start at 1).
    fit
        Tail model: ``'PL'`` (power law, default), ``'TPL'`` (truncated power law
        x^(−α) e^(−Λx), adds the ``Lambda`` column) or ``'E_TPL'`` (TPL with
        ``fix_fingers='xmin_peak'``). ``'power_law'`` / ``'truncated_power_law'`` are accepted.
    pl_package
        ``'ww'``: htsr's exact power-law search; ``'powerlaw'``: the estimation of the
        ``powerlaw`` package as the reference runs it (implemented in htsr, see
        :mod:`htsr.spectral.tpl`). None (default): ``'powerlaw'`` when ``fit`` is a TPL or
        ``fix_fingers='xmin_peak'``, else ``'ww'``.
    xmax
        None; ``'force'`` (the largest eigenvalue is a fixed upper cut-off of the model;
        needs ``pl_package='powerlaw'``); or a non-zero int k (the |k| largest eigenvalues
        are left out of the fit).
    fix_fingers
        None, ``'xmin_peak'`` or ``'clip_xmax'`` (see :mod:`htsr.spectral.fingers`);
        ``'clip_xmax'`` adds the ``num_fingers`` and ``raw_alpha`` columns.
    xmin_max, max_fingers, finger_thresh
        Parameters of ``fix_fingers``: the upper end of the xmin window (default 1.5 ×
        the ESD's log-scale peak), the most eigenvalues clipped (10; a value below half
        the eigenvalue count is replaced by 10, as in the reference), and how far α must
        drop for a clip to count (1.0).
    inverse
        Analyze the inverse ESD (eigenvalues 1/λ), as the reference's ``inverse=True``
        (see :mod:`htsr.spectral.inverse` for its conv-layer rule).
    vectors
        Add the eigenvector localization columns (mean and variance of the localization
        ratio, participation ratio and entropy of the bulk and the tail eigenvectors;
        :mod:`htsr.spectral.vectors`). Not with ``inverse``.
    intra, sparsify
        ``intra=True``: analyze the normalized product of each pair of consecutive
        layers instead of the layers (:mod:`htsr.spectral.intra`; one row per pair,
        ``Xflag`` True); ``sparsify`` inserts a random 0/1 matrix (seeded by ``seed``)
        between the two. Not with ``randomize`` or ``vectors``.
    stacked
        Analyze all selected layers as one robustly standardized, zero-padded stacked
        matrix (one row, ``layer_id`` 0; :mod:`htsr.spectral.stacked`). Takes
        precedence over ``intra``, as in the reference.
    deltas
        With plots: also draw the level spacings of each ESD (log10 gaps between
        consecutive eigenvalues and their histogram; :mod:`htsr.option_plots`).
        Changes no number.
    integer_values
        Analyze integer (and bool) weight tensors that htsr does not dequantize as if
        their codes were values. Default False: such a tensor is skipped with a reason
        (quantized layers htsr recognizes are dequantized either way; :mod:`htsr.sources.quant`).
    """

    min_evals: int = 10
    max_evals: int = 15000
    max_N: int | None = 50000
    pool: bool = True
    conv2d_norm: bool = True
    randomize: bool = False
    mp_fit: bool = False
    detX: bool = False
    seed: int = 0
    layers: LayerSelection = field(default_factory=LayerSelection)
    device: Device = Device.AUTO
    workers: int = 0
    fast: bool = False
    progress: bool | None = None
    keep_esd: bool = False
    tolerance: float = 1e-6
    start_ids: int = 0
    fit: str = "PL"
    pl_package: str | None = None
    xmax: int | str | None = None
    fix_fingers: str | None = None
    xmin_max: float | None = None
    max_fingers: int = 10
    finger_thresh: float = 1.0
    inverse: bool = False
    vectors: bool = False
    intra: bool = False
    sparsify: bool = True
    stacked: bool = False
    deltas: bool = False
    integer_values: bool = False

    def __post_init__(self) -> None:
        _check_fit_options(self)
        _positive_int("min_evals", self.min_evals)
        _positive_int("max_evals", self.max_evals)
        if self.max_N is not None:
            _positive_int("max_N", self.max_N)
        _positive_int("workers", self.workers, allow_zero=True)
        _positive_int("start_ids", self.start_ids, allow_zero=True)
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool) or self.seed < 0:
            raise OptionError(f"The 'seed' option must be a non-negative integer; got {self.seed!r}.")
        for name in ("pool", "conv2d_norm", "randomize", "mp_fit", "detX", "fast", "keep_esd", "inverse", "vectors",
                     "intra", "sparsify", "stacked", "deltas", "integer_values"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise OptionError(f"The '{name}' option must be True or False; got {value!r}.")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise OptionError(f"The 'progress' option must be True, False or None; got {self.progress!r}.")
        if not isinstance(self.tolerance, numbers.Real) or isinstance(self.tolerance, bool) or not self.tolerance > 0:
            raise OptionError(f"The 'tolerance' option must be a positive number; got {self.tolerance!r}.")
        if self.intra and (self.randomize or self.vectors):
            raise OptionError("The 'intra' option cannot be combined with 'randomize' or 'vectors' (as in the reference).")
        if self.inverse and self.randomize:
            raise OptionError("The 'inverse' option is not built together with 'randomize' (the randomized ESD "
                              "would have to be inverted too).")
        if self.inverse and self.vectors:
            raise OptionError("The 'vectors' option is not available with 'inverse' (as in the reference).")
        if self.min_evals > self.max_evals:
            raise OptionError(
                f"The 'min_evals' option ({self.min_evals}) must not exceed 'max_evals' ({self.max_evals})."
            )
        if not isinstance(self.device, Device):
            object.__setattr__(self, "device", parse_device(self.device))
        if not isinstance(self.layers, LayerSelection):
            object.__setattr__(self, "layers", parse_layers(self.layers))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> AnalysisConfig:
        """Build a config, failing on the first unknown keyword."""
        known = {f.name for f in fields(cls)}
        for key in kwargs:
            if key not in known:
                raise UnknownOptionError(
                    f"Unknown option {key!r}; known options are: {', '.join(sorted(known))}."
                )
        return cls(**kwargs)

    def replace(self, **changes: Any) -> AnalysisConfig:
        return replace(self, **changes)


_FIT_NAMES = {"pl": "PL", "power_law": "PL", "tpl": "TPL", "truncated_power_law": "TPL", "e_tpl": "E_TPL"}


def _check_fit_options(cfg: AnalysisConfig) -> None:
    """Validate and normalize ``fit, pl_package, xmax, fix_fingers, xmin_max, max_fingers, finger_thresh``."""
    def put(name: str, value: Any) -> None:
        object.__setattr__(cfg, name, value)

    fit = cfg.fit
    if not isinstance(fit, str) or fit.lower() not in _FIT_NAMES:
        raise OptionError(f"The 'fit' option must be one of PL, TPL, E_TPL; got {fit!r}.")
    put("fit", _FIT_NAMES[fit.lower()])
    fingers = cfg.fix_fingers
    if fingers is False:
        fingers = None
    if fingers is not None and fingers not in ("xmin_peak", "clip_xmax"):
        raise OptionError(f"The 'fix_fingers' option must be None, 'xmin_peak' or 'clip_xmax'; got {fingers!r}.")
    if cfg.fit == "E_TPL" and fingers == "clip_xmax":
        raise OptionError("The 'fit' option E_TPL already fixes fingers with 'xmin_peak'; it cannot be combined "
                          "with fix_fingers='clip_xmax'.")
    put("fix_fingers", fingers)
    xmax = cfg.xmax
    if xmax is False:
        xmax = None
    if xmax is not None:
        is_int = isinstance(xmax, numbers.Integral) and not isinstance(xmax, bool)
        if not (xmax == "force" or (is_int and xmax != 0)):
            raise OptionError(f"The 'xmax' option must be None, 'force' or a non-zero integer; got {xmax!r}.")
        if is_int and fingers is not None:
            raise OptionError(f"The 'xmax' option cannot be an integer ({xmax}) together with fix_fingers={fingers!r}.")
    put("xmax", xmax)
    package = cfg.pl_package
    if package is None:
        package = "powerlaw" if (cfg.fit != "PL" or fingers == "xmin_peak" or xmax == "force") else "ww"
    if package not in ("ww", "powerlaw"):
        raise OptionError(f"The 'pl_package' option must be 'ww' or 'powerlaw'; got {package!r}.")
    if package == "ww" and cfg.fit != "PL":
        raise OptionError(f"fit={cfg.fit!r} needs pl_package='powerlaw' (the 'ww' fit is a power law only).")
    if package == "ww" and xmax == "force":
        raise OptionError("xmax='force' needs pl_package='powerlaw'.")
    put("pl_package", package)
    if cfg.xmin_max is not None and (not isinstance(cfg.xmin_max, numbers.Real) or isinstance(cfg.xmin_max, bool)
                                     or not cfg.xmin_max > 0):
        raise OptionError(f"The 'xmin_max' option must be None or a positive number; got {cfg.xmin_max!r}.")
    _positive_int("max_fingers", cfg.max_fingers)
    thresh = cfg.finger_thresh
    if not isinstance(thresh, numbers.Real) or isinstance(thresh, bool) or not thresh >= 0:
        raise OptionError(f"The 'finger_thresh' option must be a non-negative number; got {thresh!r}.")


def fit_options(config: AnalysisConfig) -> dict:
    """The keyword arguments of :func:`htsr.spectral.fitting.fit_tail` for this config."""
    return {"fit": config.fit, "pl_package": config.pl_package, "xmax": config.xmax,
            "fix_fingers": config.fix_fingers, "xmin_max": config.xmin_max,
            "max_fingers": config.max_fingers, "finger_thresh": config.finger_thresh}


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "a non-negative" if allow_zero else "a positive"
        raise OptionError(f"The '{name}' option must be {what} integer; got {value!r}.")


def parse_device(value: Any) -> Device:
    """Turn 'auto' / 'cpu' / 'cuda' (any case) into a :class:`Device`."""
    if isinstance(value, Device):
        return value
    if isinstance(value, str):
        try:
            return Device(value.strip().lower())
        except ValueError:
            pass
    raise OptionError(f"The 'device' option must be one of auto, cpu, cuda; got {value!r}.")


def parse_layers(value: Any) -> LayerSelection:
    """Parse a layer selection.

    Accepts ``None`` / ``[]`` (all layers), one id, name or type, or an
    iterable of them. As in the reference, a negative id (``-12``) or a name
    or type with a leading ``-`` (``-embedding``) excludes that layer. A
    comma-separated string is split.
    """
    if value is None:
        return LayerSelection()
    if isinstance(value, LayerSelection):
        return value
    items: Iterable[Any]
    if isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise OptionError(
                f"The 'layers' option must be ids, names or types (or a list of them); got {value!r}."
            ) from None
    include: list[int | str] = []
    exclude: list[int | str] = []

    def add_int(i: int) -> None:
        # the reference: a negative id removes that layer
        (exclude if i < 0 else include).append(abs(i))

    for item in items:
        if isinstance(item, str):
            for part in (p.strip() for p in item.split(",")):
                if not part:
                    continue
                try:
                    add_int(int(part))
                    continue
                except ValueError:
                    pass
                if part.startswith("-"):
                    exclude.append(part[1:])
                else:
                    include.append(part)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            add_int(int(item))
        elif isinstance(item, LayerType):
            include.append(item.value)
        else:
            raise OptionError(f"The 'layers' option must hold ids, names or types; got {item!r}.")
    return LayerSelection(tuple(include), tuple(exclude))
