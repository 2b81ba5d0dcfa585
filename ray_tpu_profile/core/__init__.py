"""Pure things every side uses: records, schedules, clocks, hosts, files, versions (no Ray, no vLLM)."""
