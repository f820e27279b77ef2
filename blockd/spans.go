package blockd

import "sort"

// span is a half-open range of block indices [from, to).
type span struct{ from, to uint64 }

// spans is a sorted list of disjoint, non-adjacent spans: the zeroed
// ranges of a vdisk not yet committed to its tree.
type spans []span

// add inserts [from, to), merging overlapping and adjacent spans.
func (s spans) add(from, to uint64) spans {
	if to <= from {
		return s
	}
	// First span whose end reaches from.
	i := sort.Search(len(s), func(i int) bool { return s[i].to >= from })
	j := i
	for j < len(s) && s[j].from <= to {
		from = min(from, s[j].from)
		to = max(to, s[j].to)
		j++
	}
	out := append(s[:i:i], span{from, to})
	return append(out, s[j:]...)
}

// contains reports whether idx lies in a span.
func (s spans) contains(idx uint64) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i].to > idx })
	return i < len(s) && s[i].from <= idx
}

// overlapping returns the spans that intersect [from, to), clipped.
func (s spans) overlapping(from, to uint64) []span {
	if to <= from {
		return nil
	}
	var out []span
	i := sort.Search(len(s), func(i int) bool { return s[i].to > from })
	for ; i < len(s) && s[i].from < to; i++ {
		out = append(out, span{max(s[i].from, from), min(s[i].to, to)})
	}
	return out
}

// remove takes idx out of the spans (splitting the one holding it).
func (s spans) remove(idx uint64) spans {
	i := sort.Search(len(s), func(i int) bool { return s[i].to > idx })
	if i == len(s) || s[i].from > idx {
		return s
	}
	sp := s[i]
	switch {
	case sp.from == idx && sp.to == idx+1:
		return append(s[:i], s[i+1:]...)
	case sp.from == idx:
		s[i].from++
	case sp.to == idx+1:
		s[i].to--
	default:
		s = append(s, span{})
		copy(s[i+2:], s[i+1:])
		s[i] = span{sp.from, idx}
		s[i+1] = span{idx + 1, sp.to}
	}
	return s
}
