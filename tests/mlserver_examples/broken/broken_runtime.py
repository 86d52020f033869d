from mlserver import MLModel


class BrokenRuntime(MLModel):
    async def load(self) -> bool:
        raise RuntimeError("weights file is corrupt")
