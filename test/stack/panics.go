package stack

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/vectordb-io/vectordb-operator/test/panics"
)

// The manager recovers a panicking Reconcile, so a panic never fails a scenario by itself. The
// stack keeps count across manager restarts and kills: it reads the manager's
// controller_runtime_reconcile_panics_total before every stop (the counter dies with the
// process), and CheckReconcilePanics also counts the panics in the manager's whole log, which
// holds them even when a process was killed between two reads.

// scrapePanics reads the running manager's reconcile panics from its /metrics.
func (s *Stack) scrapePanics() (panics.Counts, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + s.MetricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return panics.FromText(resp.Body)
}

// notePanicsBeforeStop adds the running manager's count to the past ones; s.mu is held. A
// manager that does not answer (already dying) leaves its panics to the log check.
func (s *Stack) notePanicsBeforeStop() {
	if c, err := s.scrapePanics(); err == nil {
		s.panicsPast = s.panicsPast.Add(c)
	}
}

// CheckReconcilePanics returns an error if any manager this stack ran recovered a reconcile
// panic, by its metrics or by its log.
func (s *Stack) CheckReconcilePanics() error {
	s.mu.Lock()
	counts := s.panicsPast.Add(nil)
	running := s.manager != nil
	s.mu.Unlock()
	if running {
		cur, err := s.scrapePanics()
		if err != nil {
			return fmt.Errorf("read the manager's reconcile panics: %w", err)
		}
		counts = counts.Add(cur)
	}
	if err := counts.Err(); err != nil {
		return err
	}
	log, err := os.ReadFile(filepath.Join(s.WorkDir, "manager.log"))
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if n := panics.InLog(string(log)); n > 0 {
		return fmt.Errorf("the manager's log shows %d recovered panic(s) (%q)", n, panics.LogMarker)
	}
	return nil
}
