package vdiskapi

import (
	"os"
	"strings"
	"testing"
)

// TestRoutesComplete: every route declared in routes.go is in Routes (the
// route × role test in node walks Routes).
func TestRoutesComplete(t *testing.T) {
	src, err := os.ReadFile("routes.go")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(src), "route.New("); n != len(Routes) {
		t.Fatalf("routes.go declares %d routes, Routes lists %d: add the new route to Routes", n, len(Routes))
	}
}
