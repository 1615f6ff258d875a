"""A trained AMINet served as an MLflow pyfunc model (weights as a state dict, MLflow's "model from code")."""
