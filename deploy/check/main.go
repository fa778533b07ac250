// memstream-deploy-check loads deployment files the way Docker does, so tests can check
// them without Docker:
//
//	check compose <file> [profile,profile...]   compose-go (Docker Compose's loader: schema
//	                                            validation, interpolation, profiles); prints
//	                                            each resolved service as JSON
//	check dockerfile <file>                     BuildKit's Dockerfile parser and instruction
//	                                            checks; prints the instructions as JSON
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

type service struct {
	Name        string   `json:"name"`
	MemoryBytes int64    `json:"memory_bytes"`
	Ports       []string `json:"ports"`
	Healthcheck bool     `json:"healthcheck"`
}

type instruction struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func compose(file string, profileList string) {
	profiles := []string{}
	if profileList != "" {
		profiles = strings.Split(profileList, ",")
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithOsEnv, cli.WithDotEnv, cli.WithProfiles(profiles))
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
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
		fail(err)
	}
}

func dockerfile(file string) {
	f, err := os.Open(file)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	result, err := parser.Parse(f)
	if err != nil {
		fail(err)
	}
	for _, w := range result.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w.Short)
	}
	stages, _, err := instructions.Parse(result.AST, nil)
	if err != nil {
		fail(err)
	}
	out := []instruction{}
	for _, stage := range stages {
		out = append(out, instruction{Name: "from", Text: stage.BaseName})
		for _, c := range stage.Commands {
			out = append(out, instruction{Name: c.Name(), Text: fmt.Sprint(c)})
		}
	}
	if len(result.Warnings) > 0 {
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: check compose <file> [profiles] | check dockerfile <file>")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "compose":
		profiles := ""
		if len(os.Args) > 3 {
			profiles = os.Args[3]
		}
		compose(os.Args[2], profiles)
	case "dockerfile":
		dockerfile(os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
