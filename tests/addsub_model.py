"""OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 - INPUT1: the shared-memory tests' model, used in
process and copied into a model folder for a server in another process."""

from gpuserve import InferOutput, InferResponse, Model


class AddSub(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        a = payload.get_input_by_name("INPUT0").as_numpy()
        b = payload.get_input_by_name("INPUT1").as_numpy()
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("OUTPUT0", a + b),
                                                     InferOutput.from_numpy("OUTPUT1", a - b)])
