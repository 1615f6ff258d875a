"""MLflow's "model from code" entry of a registered AMINet (see ``serving.pyfunc``): MLflow runs this file
when it loads the model, so no Python object is unpickled."""

import mlflow

from serving.pyfunc import AMINetPyfunc

mlflow.models.set_model(AMINetPyfunc())
