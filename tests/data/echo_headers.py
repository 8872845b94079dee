"""A route a test adds to a real Dask scheduler's dashboard (distributed.scheduler.http.routes):
it answers with the request headers that reached the dashboard."""

import json

from tornado import web


class EchoHeaders(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(dict(self.request.headers.get_all())))


routes = [("/echo-headers", EchoHeaders, {})]
