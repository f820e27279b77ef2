// Package journaltest is the conformance suite every journal.Log passes:
// appends read back in (Epoch, Seq) order, one record per pair, payloads
// not retained; sealing and fencing (explicit by Read, implicit by a newer
// epoch's append, never lowered); Trim (covered records may stay, the
// seal they imply survives them, Trim(All, All) forgets the journal and
// its seal); ErrFull past journal.MaxBytes; ErrInvalid for bad input; and,
// for Logs that can be restarted, that all of it survives a restart and a
// torn tail (an append a crash cut short) is dropped.
//
// Usage, in an implementation's tests:
//
//	func TestJournalConformance(t *testing.T) {
//		journaltest.Run(t, func(t *testing.T) journaltest.Harness {
//			return journaltest.Harness{Log: newLog(t), Restart: ...}
//		})
//	}
//
// The constructor is called once per subtest and must return an empty
// Log; it registers its own cleanup with t.Cleanup.
package journaltest
