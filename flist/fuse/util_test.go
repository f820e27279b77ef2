package fuse

import (
	"encoding/hex"
	"fmt"
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
func hexs(b []byte) string                      { return hex.EncodeToString(b) }
