// compose-check loads a compose file the way Docker Compose does (compose-go: schema
// validation, interpolation, profiles) and prints each service as JSON, so tests can check
// it without Docker: compose-check <file> [profile,profile...]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type service struct {
	Name        string   `json:"name"`
	MemoryBytes int64    `json:"memory_bytes"`
	Ports       []string `json:"ports"`
	Healthcheck bool     `json:"healthcheck"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check <compose file> [profiles]")
		os.Exit(2)
	}
	profiles := []string{}
	if len(os.Args) > 2 && os.Args[2] != "" {
		profiles = strings.Split(os.Args[2], ",")
	}
	opts, err := cli.NewProjectOptions([]string{os.Args[1]},
		cli.WithOsEnv, cli.WithDotEnv, cli.WithProfiles(profiles))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := []service{}
	for name, s := range project.Services {
		entry := service{Name: name, Ports: []string{}}
		if s.Deploy != nil && s.Deploy.Resources.Limits != nil {
			entry.MemoryBytes = int64(s.Deploy.Resources.Limits.MemoryBytes)
		}
		for _, p := range s.Ports {
			entry.Ports = append(entry.Ports, fmt.Sprintf("%s:%s:%d", p.HostIP, p.Published, p.Target))
		}
		entry.Healthcheck = s.HealthCheck != nil && !s.HealthCheck.Disable
		out = append(out, entry)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
