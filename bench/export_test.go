package bench

// SetLookPath replaces how NeedTools finds binaries; the returned func
// restores it.
func SetLookPath(f func(string) (string, error)) func() {
	old := lookPath
	lookPath = f
	return func() { lookPath = old }
}
