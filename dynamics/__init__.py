"""dynamics: theory simulators for the training dynamics and depth efficiency of self-attention.

From Python::

    import dynamics as dyn
    dyn.experiments()                                   # names
    res = dyn.run("scan-snap-fig4", quick=True)          # in memory: res.tables, res.claims, res.figures
    res = dyn.sweep("scan-snap-fig6", grid={"eta_z": [0.5, 1]}, quick=True)

Topic packages (``dynamics.scan_snap``, ``dynamics.depth_width``, ``dynamics.collapse``,
``dynamics.detr``) hold the simulators; ``dynamics.stats`` the intervals every claim uses.
Nothing is imported eagerly and nothing global changes at import: topic modules pull in torch only
when they are used.
"""

__version__ = "0.1.0"
__all__ = ["Result", "describe", "experiments", "run", "sweep"]


def __getattr__(name: str):
    if name == "experiments":  # the registry package; calling it lists the names
        import importlib

        return importlib.import_module(".experiments", __name__)
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'dynamics' has no attribute {name!r}")
