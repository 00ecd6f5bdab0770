"""`python -m ensemble` runs the `ens` command line."""

from ensemble.entry import main

if __name__ == "__main__":
    main()
