"""`kernel.cull_idle_minutes` changed live (supervisor's extension, live.apply_culling) on Jupyter
Server's own kernel manager, with a real kernel: idle kernels go, at the new setting, and 0 stops it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ensure_async
from jupyter_server._tz import utcnow

from supervisor.inside_jupyter.jupyter_remote_ext.live import apply_culling


async def culled_after(manager: AsyncMappingKernelManager, kernel_id: str, idle: timedelta) -> bool:
    """Whether one round of the culler Jupyter is running now ends the kernel, idle for `idle`
    with a browser tab still connected to it."""
    kernel = manager.get_kernel(kernel_id)
    kernel.last_activity = utcnow() - idle
    kernel.execution_state = "idle"
    manager._kernel_connections[kernel_id] = 1  # a forgotten tab must not keep it
    callback = manager._culler_callback
    if callback is not None and callback.is_running():
        await ensure_async(callback.callback())
    return kernel_id not in manager.list_kernel_ids()


def test_live_culling_changes_reach_a_running_kernel_manager(tmp_path: Path):
    async def scenario() -> None:
        manager = AsyncMappingKernelManager(root_dir=str(tmp_path), log=logging.getLogger("km"))
        try:
            apply_culling(manager, 30)
            running = manager._culler_callback
            assert running is not None and running.is_running()
            assert running.callback_time == 60_000  # looked at every minute
            kernel = await manager.start_kernel(kernel_name="python3")
            assert not await culled_after(manager, kernel, timedelta(minutes=29))
            assert await culled_after(manager, kernel, timedelta(minutes=31))

            apply_culling(manager, 5)  # a reload lowers it: the old culler makes way
            assert not running.is_running() and manager._culler_callback is not running
            kernel = await manager.start_kernel(kernel_name="python3")
            assert not await culled_after(manager, kernel, timedelta(minutes=4))
            assert await culled_after(manager, kernel, timedelta(minutes=6))

            apply_culling(manager, 0)  # 0 = never
            kernel = await manager.start_kernel(kernel_name="python3")
            assert not await culled_after(manager, kernel, timedelta(days=30))
            assert manager.cull_idle_timeout == 0

            apply_culling(manager, 0)  # unchanged: nothing restarts
            apply_culling(manager, 1)
            assert await culled_after(manager, kernel, timedelta(minutes=2))
        finally:
            if manager._culler_callback is not None:
                manager._culler_callback.stop()
            await manager.shutdown_all(now=True)

    asyncio.run(asyncio.wait_for(scenario(), 120))
