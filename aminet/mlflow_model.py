"""MLflow's "model from code" entry of a registered AMINet (see ``aminet.serving``): MLflow runs this file
when it loads the model, so no Python object is unpickled."""

import mlflow

from aminet.serving import AMINetPyfunc

mlflow.models.set_model(AMINetPyfunc())
