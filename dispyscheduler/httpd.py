"""dispy's ``dispy.httpd`` module: ``DispyHTTPServer(cluster)``, a program's own status page
of its clusters (``client/monitor.py``)."""

from .client.monitor import DispyHTTPServer
from .constants import DEFAULT_HTTP_PORT

__all__ = ['DispyHTTPServer', 'DEFAULT_HTTP_PORT']
