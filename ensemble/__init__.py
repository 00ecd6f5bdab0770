"""ens: fuse independently trained segmentation models into one scored Kaggle submission."""


def __getattr__(name: str) -> str:
    # `__version__` is looked up on first use: importing the package stays instant, so the `ens`
    # entry point handles Ctrl-C before anything slow loads.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("ens")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0.0.0+local"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__"]
