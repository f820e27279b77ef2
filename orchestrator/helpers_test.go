package orchestrator

import "os"

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "zos-orch-fuzz-") }
