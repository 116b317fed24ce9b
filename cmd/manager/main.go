// Command manager runs the CsvIngestion controller and the HTTP shim (health and the legacy task API).
package main

import (
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/vectordb-io/vectordb-operator/internal/manager"
)

func main() {
	opts := manager.DefaultOptions()
	fs := manager.FlagSet(&opts)
	if err := fs.Parse(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := manager.Run(ctrl.SetupSignalHandler(), opts); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}
