// Package wait is the one polling helper of zos's tests: wait until a
// condition holds, failing the test with what it was waiting for (and the
// last reason it did not hold) after a timeout. It polls often at first
// and then every 50 ms, so a condition that holds soon costs little and
// one that takes long does not spin.
//
//	wait.For(t, time.Minute, "node 2 back", func() bool { return ping(n2) == nil })
//	wait.Until(t, time.Minute, func() error { return inspect(ref) })
//
// Timeouts are generous on purpose: they bound a broken test, not a slow
// machine.
package wait
