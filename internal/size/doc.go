// Package size parses byte counts written by people: "4096", "10G",
// "512MiB", "1.5k". It is the one size parser of zos: the CLI's flags, the
// vdisk API's JSON and query parameters and the flist cache bound all go
// through Parse, so every place accepts the same spellings and refuses the
// same overflows.
//
// Units are binary (K = 1024) and case-insensitive, optionally followed by
// "i", "iB" or "B". Results are at most 2^62 bytes; larger values, negative
// numbers and anything else are errors wrapping ErrInvalid.
//
//	n, err := size.Parse("10G") // 10 << 30
//
// Bytes is the JSON form: a number of bytes or such a string.
package size
