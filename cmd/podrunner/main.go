// Command podrunner is the local stand-in for a node: it registers one Ready Node, binds pending
// pods to it and runs their container as a local process (see package test/podrunner). It runs
// until SIGINT or SIGTERM, then kills every process it started.
//
//	podrunner -kubeconfig /tmp/kubeconfig -image-map vectordb/embedder=bin/embedder -work-dir /tmp/pods
//
// Pods get KUBECONFIG set to -kubeconfig: they reach the API with the runner's credentials.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vectordb-io/vectordb-operator/test/podrunner"
)

// keyValues collects repeated KEY=VALUE flags.
type keyValues struct {
	name string
	kv   map[string]string
	list []string
}

func (f *keyValues) String() string { return strings.Join(f.list, ",") }

func (f *keyValues) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" || val == "" {
		return fmt.Errorf("want %s, got %q", f.name, v)
	}
	if f.kv != nil {
		if _, dup := f.kv[k]; dup {
			return fmt.Errorf("%q given twice", k)
		}
		f.kv[k] = val
	}
	f.list = append(f.list, v)
	return nil
}

func main() {
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, funcr.Options{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], log)
	stop()
	if err != nil {
		log.Error(err, "podrunner failed")
		os.Exit(1)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, log logr.Logger) error {
	fs := flag.NewFlagSet("podrunner", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster; also given to every pod as KUBECONFIG")
	nodeName := fs.String("node-name", podrunner.DefaultNodeName, "name of the Node to register")
	workDir := fs.String("work-dir", "", "directory for per-pod logs and termination messages (default: a temporary directory, removed on exit)")
	images := &keyValues{name: "image=path", kv: map[string]string{}}
	fs.Var(images, "image-map", "image=path: run this local executable for the image (exact, or repository without tag); repeatable")
	extraEnv := &keyValues{name: "KEY=VALUE"}
	fs.Var(extraEnv, "env", "KEY=VALUE added to every pod's process; repeatable")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	if *kubeconfig == "" {
		return errors.New("give -kubeconfig (or set KUBECONFIG)")
	}
	if len(images.kv) == 0 {
		return errors.New("give at least one -image-map image=path")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", *kubeconfig, err)
	}
	r, err := podrunner.Start(ctx, podrunner.Options{
		Config:     cfg,
		Kubeconfig: *kubeconfig,
		NodeName:   *nodeName,
		Images:     images.kv,
		WorkDir:    *workDir,
		ExtraEnv:   extraEnv.list,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	r.Stop()
	return nil
}
