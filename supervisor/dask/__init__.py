"""[dask]: Dask in the notebooks, with nothing of it reachable without Jupyter's login.

- credentials.py (root, in a short-lived child): the cluster's own CA and the one TLS identity the
  notebooks, their local cluster and any cluster the user starts present to each other.
- plan.py: pure functions of the settings: the scheduler address, the dashboard link on the public
  URL, the environment Jupyter and its kernels inherit, JupyterLab's Dask settings.

Inside Jupyter, supervisor/inside_jupyter/jupyter_remote_ext/dask_gate.py runs the local cluster
and decides which dashboards the proxy may reach.
"""
