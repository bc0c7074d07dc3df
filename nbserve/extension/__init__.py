"""The jupyter-server extension: the kernels' models at ``{base_url}nbserve/``, behind Jupyter's auth.

On Binder, JupyterHub or any remote Jupyter only the Jupyter server's URL is reachable; a model
a kernel serves on 127.0.0.1:8080 is not. The extension answers TorchServe's paths under
``{base_url}nbserve/`` (merged across kernels) and ``{base_url}nbserve/kernels/{kernel_id}/``
(one kernel), forwarding each request to the kernel that serves it.
"""

from __future__ import annotations

import re

from jupyter_core.paths import jupyter_runtime_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Unicode

from nbserve.api.routes import FIRST_SEGMENTS
from nbserve.extension.handlers import (
    AllModelsHandler,
    KernelsHandler,
    MergedMetricsHandler,
    OpenAICompletionsHandler,
    OpenAIModelsHandler,
    PageHandler,
    ProxyHandler,
)
from nbserve.extension.kernels import ServingKernels

#: TorchServe's paths, as the kernels' servers answer them (:data:`nbserve.api.routes.ROUTES`).
_PATHS = rf"(?P<path>(?:{'|'.join(map(re.escape, FIRST_SEGMENTS))})(?:[/:].*)?)"


class NBServe(ExtensionApp):
    """Configured as ``c.NBServe.<name>`` in jupyter_server_config.py."""

    name = "nbserve"
    default_url = "/nbserve/"
    load_other_extensions = True

    request_timeout = Float(300.0, config=True,
                            help="Seconds a forwarded request may take (a model's queue and "
                                 "its response_timeout included).")
    models_cache_seconds = Float(2.0, config=True,
                                 help="How long the list of which kernel serves which model is "
                                      "reused before the kernels are asked again.")
    runtime_dir = Unicode(config=True,
                          help="Where kernels announce themselves (Jupyter's runtime dir).")

    def initialize_settings(self):
        self.settings["nbserve_kernels"] = ServingKernels(
            self.serverapp.kernel_manager, self.runtime_dir or jupyter_runtime_dir(),
            self.request_timeout, self.models_cache_seconds)

    def initialize_handlers(self):
        self.handlers.extend([
            (r"/nbserve/?", PageHandler),
            (r"/nbserve/kernels", KernelsHandler),
            (r"/nbserve/kernels/(?P<kernel_id>[^/]+)/" + _PATHS, ProxyHandler),
            (r"/nbserve/models", AllModelsHandler),
            (r"/nbserve/v1/models", OpenAIModelsHandler),
            (r"/nbserve/(?P<path>v1/(?:chat/)?completions)", OpenAICompletionsHandler),
            (r"/nbserve/metrics", MergedMetricsHandler),
            (r"/nbserve/" + _PATHS, ProxyHandler),
        ])
