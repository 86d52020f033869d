"""`kserve.model_server`: `ModelServer` and the shared `parser` KServe scripts build their own options on
(`argparse.ArgumentParser(parents=[model_server.parser])`)."""

from gpuserve.server.model_server import ModelServer, parser

__all__ = ["ModelServer", "parser"]
