// Command fakeworker is the container process of the pod runner's tests: it prints, writes a
// termination message built from its flags and environment, sleeps and exits with a chosen code.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	msg := flag.String("msg", "", "termination message text")
	msgEnv := flag.String("msg-env", "", "comma-separated env names whose NAME=value lines are appended to the message")
	stdout := flag.String("stdout", "", "line printed to stdout")
	stderr := flag.String("stderr", "", "line printed to stderr")
	pidFile := flag.String("pid-file", "", "file to write the process id to")
	holdUnless := flag.String("hold-unless", "", "if this file does not exist, create it and sleep until killed")
	sleep := flag.Duration("sleep", 0, "how long to sleep before exiting")
	tickUntil := flag.String("tick-until", "", "print a numbered line every 20ms until this file exists, then \"last line\"")
	exit := flag.Int("exit", 0, "exit code")
	flag.Parse()

	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "write pid file:", err)
			os.Exit(3)
		}
	}
	if *stdout != "" {
		fmt.Println(*stdout)
	}
	if *stderr != "" {
		fmt.Fprintln(os.Stderr, *stderr)
	}
	if *holdUnless != "" {
		if _, err := os.Stat(*holdUnless); os.IsNotExist(err) {
			if err := os.WriteFile(*holdUnless, nil, 0o600); err != nil {
				fmt.Fprintln(os.Stderr, "create hold file:", err)
				os.Exit(3)
			}
			time.Sleep(time.Hour)
		}
	}
	if *tickUntil != "" {
		for i := 1; ; i++ {
			if _, err := os.Stat(*tickUntil); err == nil {
				break
			}
			fmt.Printf("tick %d\n", i)
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Println("last line")
	}
	time.Sleep(*sleep)

	var b strings.Builder
	b.WriteString(*msg)
	for _, name := range strings.Split(*msgEnv, ",") {
		if name == "" {
			continue
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			v = "<unset>"
		}
		fmt.Fprintf(&b, "\n%s=%s", name, v)
	}
	if b.Len() > 0 {
		if err := os.WriteFile(os.Getenv("VECTORDB_TERMINATION_LOG"), []byte(b.String()), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "write termination message:", err)
			os.Exit(3)
		}
	}
	os.Exit(*exit)
}
