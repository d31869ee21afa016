"""Where and how a pipeline runs: settings from the environment, the device, torchrun processes,
the model, background reading and sharded work merged back in input order.

Every pipeline and command uses these; nothing here imports Typer or Rich.

- :func:`env_int`, :func:`env_float`, :func:`env_flag` and :func:`env_str` are the one reader of
  settings from the environment (``CADUCEUS_*`` and the few of other libraries that this package
  honours): a value is read when it is used, never at import, and a value that cannot be used is
  refused with one line naming the variable, whatever the setting.
- :func:`set_threads` sets the CPU threads of torch and of the numba kernels (``--threads``).
- :func:`resolve_device` is the one default-device rule: ``cuda:LOCAL_RANK`` when CUDA is there
  (``cuda:0`` outside torchrun), else ``cpu``; a device that cannot run here is refused.
- :func:`torchrun` is the one reader of torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK;
  :func:`env_rank` for a command that needs its rank before the run). It sets up the process
  group once and always destroys what it created.
- :func:`prefetch` runs an iterator on a background thread.
- :func:`run_sharded` is the one way work is shared between torchrun processes: chunk i runs on
  rank ``i % world`` and the results come back in input order, to rank 0 through part files
  (whole outputs) or to every rank in memory (small results such as features).
"""

from __future__ import annotations

# The names every pipeline uses, from the modules that define them (``X as X``: re-exported).
from .settings import (env_flag as env_flag, env_float as env_float, env_int as env_int,
                       env_rank as env_rank, env_str as env_str)
from .devices import (available_cores as available_cores, cpu_threads as cpu_threads,
                      device_name as device_name, resolve_device as resolve_device,
                      set_threads as set_threads)
from .processes import (Runtime as Runtime, torchrun as torchrun)
from .work import (owns as owns, part_paths as part_paths, prefetch as prefetch, run_sharded as run_sharded,
                   shard_location as shard_location)
