"""`ens bundle`: the ensemble, its members and every wheel it needs as one offline folder for a
notebook without internet (a Kaggle code competition), with `run.py` to install and predict."""
