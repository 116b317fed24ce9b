package ratebudget

import (
	"fmt"
	"testing"
)

func TestProbeGroupNeverRecovers(t *testing.T) {
	s := NewShared()
	for i := range 4 {
		s.Observe(map[string]Counts{"a": {20, 10}, "b": {20, 0}}, 2)
		fmt.Println("cut", i, s.Budget.Factor, s.GroupFactors())
	}
	for i := range 200 {
		s.Observe(map[string]Counts{"a": {100, 1}, "b": {100, 0}}, 2)
		if i%50 == 0 || i == 199 {
			fmt.Println("stray", i, s.Budget.Factor, s.GroupFactors())
		}
	}
	// one ingestion alone: budget
	u := NewShared()
	for range 4 {
		u.Observe(map[string]Counts{"a": {20, 10}}, 1)
	}
	for range 200 {
		u.Observe(map[string]Counts{"a": {100, 1}}, 1)
	}
	fmt.Println("single", u.Budget.Factor)
}
