"""Progress bars (tqdm: a text bar on a terminal, the notebook widget bar in Jupyter).

Shown by default only where a person is watching: stderr is a terminal, or the
code runs in a Jupyter kernel. Never in piped or redirected output unless asked
for (``progress=True``); ``progress=False`` (CLI ``--quiet``) silences it. Each
bar shows the count, the rate and the time left. tqdm is imported only when a
bar is shown; without tqdm installed there is simply no bar.
"""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython already imported and running a kernel app)."""
    ipy = sys.modules.get("IPython")
    if ipy is None:
        return False
    try:
        shell = ipy.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def notebook_bar() -> Any:
    """tqdm's notebook widget bar inside a Jupyter kernel with ipywidgets (None elsewhere: the text bar).

    Chosen here rather than by ``tqdm.auto``, which decides once at its first import and warns in a
    kernel without ipywidgets; without them the text bar is used, silently.
    """
    if not in_notebook():
        return None
    try:
        import ipywidgets  # noqa: F401
        from tqdm.notebook import tqdm
    except ImportError:
        return None
    return tqdm


def watching(stream: Any = None) -> bool:
    """True when a person sees ``stream`` (default stderr): a terminal or a notebook."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return tty or in_notebook()


class Progress:
    """One progress bar: ``update(what)`` after each item, ``close()`` at the end.

    Parameters
    ----------
    total : int
        Number of items.
    enabled : bool or None
        True: always shown; False: never; None: when :func:`watching`.
    desc : str
        The bar's label (``htsr analyze``, ``htsr figures``).
    unit : str
        What an item is, for the rate (``layer`` → ``layer/s``).

    Examples
    --------
    >>> bar = Progress(3, enabled=False)
    >>> for name in ("a", "b", "c"):
    ...     bar.update(name)
    >>> bar.done, bar.shown
    (3, False)
    >>> bar.close()
    """

    def __init__(self, total: int, enabled: bool | None = None, desc: str = "htsr", unit: str = "layer") -> None:
        self.total = total
        self.done = 0
        self._bar = None
        if enabled is None:
            enabled = watching()
        if enabled and total > 0:
            try:
                from tqdm import tqdm
            except ImportError:  # no tqdm: no bar
                return
            base = notebook_bar() or tqdm

            class _Bar(base):  # type: ignore[valid-type,misc]
                monitor_interval = 0  # no monitor thread: figures are drawn in forked processes only
                # when no other thread runs (plotting._parallel_workers)

            self._bar = _Bar(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True, dynamic_ncols=True,
                             mininterval=0.2)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, what: str = "") -> None:
        """One more item done; ``what`` (its name) is shown after the bar."""
        self.done += 1
        if self._bar is not None:
            if what:
                self._bar.set_postfix_str(what[-40:], refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
