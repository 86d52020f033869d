"""`kserve.utils` under the new name: the helpers KServe's own model servers and examples import
(`from kserve.utils.utils import get_predict_input, get_predict_response`)."""
