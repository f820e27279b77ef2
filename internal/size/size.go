package size

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every error of Parse.
var ErrInvalid = errors.New("invalid size")

// Max is the largest size Parse returns (2^62 bytes, 4 EiB).
const Max = int64(1) << 62

var shifts = map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}

// Parse parses a size: bytes, or a number (possibly with a fraction) with a
// binary unit suffix K, M, G, T or P, optionally followed by "i", "iB" or
// "B" (case-insensitive): "10G" is 10 GiB, "1.5K" is 1536.
func Parse(s string) (int64, error) {
	str := strings.TrimSpace(s)
	i := strings.IndexFunc(str, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := str, ""
	if i >= 0 {
		num, unit = str[:i], strings.ToUpper(strings.TrimSpace(str[i:]))
	}
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	sh, ok := shifts[unit]
	if num == "" || !ok {
		return 0, invalid(s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 || n > Max>>sh {
			return 0, fmt.Errorf("%w %q: out of range (at most %d bytes)", ErrInvalid, s, Max)
		}
		return n << sh, nil
	} else if !strings.Contains(num, ".") {
		return 0, fmt.Errorf("%w %q: out of range (at most %d bytes)", ErrInvalid, s, Max)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, invalid(s)
	}
	v := f * float64(int64(1)<<sh)
	if v > float64(Max) {
		return 0, fmt.Errorf("%w %q: out of range (at most %d bytes)", ErrInvalid, s, Max)
	}
	return int64(v), nil
}

func invalid(s string) error {
	return fmt.Errorf("%w %q: want bytes or a number with K, M, G, T or P (e.g. 10G)", ErrInvalid, s)
}

// Bytes is a byte count that decodes from a JSON number or a string Parse
// accepts ("10G", "512M", "4096"). It encodes as a number.
type Bytes int64

// UnmarshalJSON accepts a number or a size string.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var n int64
	if err := json.Unmarshal(data, &n); err == nil {
		*b = Bytes(n)
		return nil
	}
	var str string
	if err := json.Unmarshal(data, &str); err != nil {
		return fmt.Errorf("size: want a number of bytes or a string like \"10G\"")
	}
	n, err := Parse(str)
	if err != nil {
		return err
	}
	*b = Bytes(n)
	return nil
}

// Format writes a byte count with binary units, one decimal: "512 B",
// "1.5 KiB", "10.0 GiB".
func Format(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return sign + strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}
