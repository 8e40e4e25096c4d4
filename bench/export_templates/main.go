// Renders an Ollama-style TEMPLATE with Go's text/template (what Ollama uses), for
// bench/export_templates.py. Input on stdin: {"template": "...", "messages": [{"role","content"}]}.
// The data shape mirrors Ollama's: .Messages with .Role and .Content.
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Input struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		os.Stderr.WriteString("bad input: " + err.Error() + "\n")
		os.Exit(2)
	}
	t, err := template.New("t").Parse(in.Template)
	if err != nil {
		os.Stderr.WriteString("parse: " + err.Error() + "\n")
		os.Exit(1)
	}
	data := map[string]any{"Messages": in.Messages}
	if err := t.Execute(os.Stdout, data); err != nil {
		os.Stderr.WriteString("exec: " + err.Error() + "\n")
		os.Exit(1)
	}
}
