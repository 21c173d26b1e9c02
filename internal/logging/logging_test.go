package logging

import "testing"

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		s    string
		max  int
		head string
		cut  int
	}{
		{"short", 10, "short", 0},
		{"exactly", 7, "exactly", 0},
		{"abcdef", 3, "abc", 3},
		{"aé", 2, "a", 2}, // é is two bytes: not split
		{"éé", 3, "é", 2},
	} {
		if head, cut := Cut(tc.s, tc.max); head != tc.head || cut != tc.cut {
			t.Errorf("Cut(%q, %d) = %q, %d; want %q, %d", tc.s, tc.max, head, cut, tc.head, tc.cut)
		}
	}
}
